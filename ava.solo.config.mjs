// The tests that must have the machine to themselves, one file at a time (see ava.config.mjs).
export default {
  files: ['dist/test/**/*.solo.test.js'],
  concurrency: 1,
  timeout: '5m',
  workerThreads: false,
};
