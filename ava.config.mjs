// The suite. Files named *.solo.test.* load the whole machine (real QEMU guests under TCG,
// failovers with both CPUs burnt on purpose) and time what happens: they run afterwards, one at a
// time (ava.solo.config.mjs), so that neither they nor the rest of the suite measure the other's load.
export default {
  files: ['dist/test/**/*.test.js', '!dist/test/**/*.solo.test.js'],
  timeout: '2m',
  workerThreads: false,
};
