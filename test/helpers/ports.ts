/** Unused ports and live processes: the k8s testbed package's (one copy for the whole repository). */
export { processAlive, unusedPort } from '@cartero/k8s-testbed/helpers/ports.js';
