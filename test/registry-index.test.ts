/** The registry's parent → children index: stops reach exactly the subtree, deepest first, as paths come and go. */
import test from 'ava';
import { silentLogger } from '../runtime/logger.js';
import { ActorSystem } from '../runtime/system.js';

test('stopping an actor stops its whole subtree deepest first, and only it, through releases and respawns', async (t) => {
  const system = new ActorSystem({ identity: { cluster: 'lab', node: 'n1', incarnation: 1 }, log: silentLogger() });
  t.teardown(() => system.shutdown('test over', 1000));
  const stopped: string[] = [];
  const spawn = (...segments: string[]) =>
    system.spawn(system.localPath(...segments), () => ({ receive: () => undefined, stopping: () => void stopped.push(segments.join('/')) }));
  await spawn('root');
  await spawn('other');
  for (const branch of ['a', 'b']) {
    await spawn('root', branch);
    for (let leaf = 0; leaf < 3; leaf += 1) await spawn('root', branch, `leaf-${leaf}`);
  }
  await spawn('root', 'a', 'leaf-0', 'deep');
  // A subtree stopped and spawned again is indexed again.
  await system.ref(system.localPath('root', 'b')).ask({ type: 'ping' });
  const b = system.childrenOf(system.paths().find((path) => path.endsWith('/root/b'))!);
  t.deepEqual(b.map((actor) => actor.path.split('/').slice(-1)[0]).sort(), ['leaf-0', 'leaf-1', 'leaf-2']);
  for (const actor of b) await actor.stop('test', 1000);
  t.deepEqual(system.childrenOf(system.paths().find((path) => path.endsWith('/root/b'))!), []);
  await spawn('root', 'b', 'leaf-9');
  stopped.length = 0;

  const root = system.paths().find((path) => path.endsWith('/root'))!;
  const below = system.childrenOf(root).map((actor) => actor.path.replace(/^acp:\/\/lab\/n1\//, ''));
  t.deepEqual(below.slice().sort(), ['root/a', 'root/a/leaf-0', 'root/a/leaf-0/deep', 'root/a/leaf-1', 'root/a/leaf-2', 'root/b', 'root/b/leaf-9'].sort());
  const depths = below.map((path) => path.split('/').length);
  t.deepEqual(depths, depths.slice().sort((x, y) => y - x));

  await system.shutdown('over', 1000);
  t.is(stopped.indexOf('root/a/leaf-0/deep') < stopped.indexOf('root/a/leaf-0') && stopped.indexOf('root/a/leaf-0') < stopped.indexOf('root/a'), true);
  t.is(stopped.at(-1) === 'root' || stopped.at(-1) === 'other', true);
  t.is(stopped.length, 9);
  t.deepEqual(system.paths(), []);
});
