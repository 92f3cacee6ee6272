import test from 'ava';
import { counterRate } from '../runtime/rate.js';

test('a counter rate is the increase per second, rounded as asked', (t) => {
  t.is(counterRate(3000, 1000, 2, 0), 1000);
  t.is(counterRate(10, 0, 3, 2), 3.33);
  t.is(counterRate(10, 0, 3, 1), 3.3);
  t.is(counterRate(5, 5, 1, 2), 0);
});

test('no rate without an earlier sample, without time passed, or when the counter went down (a reset)', (t) => {
  t.is(counterRate(10, undefined, 1, 2), null);
  t.is(counterRate(10, 5, 0, 2), null);
  t.is(counterRate(10, 5, -1, 2), null);
  t.is(counterRate(10, 5, Number.NaN, 2), null);
  t.is(counterRate(4, 5, 1, 2), null);
});
