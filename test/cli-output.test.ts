import test from 'ava';
import { usageMessage } from '../cli/output.js';

const missing = 'Not enough non-option arguments: got 0, need at least 1';

test('a missing argument names the command and its --help, after global flags and their values, before its own flags', (t) => {
  const named = "acp system start: 1 argument needed, 0 given; 'acp system start --help' names it";
  t.is(usageMessage(missing, ['system', 'start']), named);
  t.is(usageMessage(missing, ['--home', '/tmp/x', '--json', 'system', 'start']), named);
  t.is(usageMessage(missing, ['system', 'start', '--json']), named);
  t.is(usageMessage('Not enough non-option arguments: got 1, need at least 2', ['storage', 'volume', 'clone', 'local/a']), "acp storage volume clone: 2 arguments needed, 1 given; 'acp storage volume clone --help' names them");
});

test('a missing argument whose command cannot be told from what was typed gets no command name', (t) => {
  const generic = 'a command is missing arguments (2 arguments needed, 1 given); its --help names them';
  // local/a after --node n1: an argument or the flag's value, yargs knows, this does not.
  t.is(usageMessage('Not enough non-option arguments: got 1, need at least 2', ['storage', 'volume', 'clone', '--node', 'n1', 'local/a']), generic);
  t.is(usageMessage('Not enough non-option arguments: got 1, need at least 2', ['--home']), generic);
});

test('a value yargs read as flags is named with how to give it; a plain negative number is a value, and an unknown flag is named once', (t) => {
  t.is(usageMessage('Unknown arguments: 1, M', ['storage', 'volume', 'create', 'local/big', '--size', '-1M']), '-1M after --size was read as flags, not as its value: write --size=-1M to give it as the value');
  t.is(usageMessage('Unknown argument: bogus', ['ask', 'framework', '{}', '--timeout', '-5', '--bogus']), 'Unknown argument: bogus');
  t.is(usageMessage('Unknown arguments: bogus-flag, bogusFlag', ['system', 'create', 'x', '--bogus-flag']), 'Unknown argument: bogus-flag');
  t.is(usageMessage('Invalid values:\n  Argument: driver, Given: "nope"', []), 'Invalid values: Argument: driver, Given: "nope"');
});
