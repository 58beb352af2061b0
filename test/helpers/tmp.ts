/** Temporary directories for tests: the k8s testbed package's (one copy for the whole repository). */
export { isUnderTmpDir, makeTmpDir, removeTmpDir } from '@cartero/k8s-testbed/helpers/tmp.js';
