/** Polling with a deadline: the k8s testbed package's (one copy for the whole repository). */
export { waitFor, type WaitForOptions } from '@cartero/k8s-testbed/helpers/poll.js';
