// The suite. Files named *.solo.test.* load the whole machine (real failovers with both CPUs
// burnt on purpose): they run afterwards, alone (ava.solo.config.mjs), so that neither they nor
// the rest of the suite measure the other's load.
export default {
  files: ['dist/test/**/*.test.js', '!dist/test/**/*.solo.test.js'],
  timeout: '2m',
  workerThreads: false,
};
