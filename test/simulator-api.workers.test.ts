/** test/simulator-api.test.ts again, its servers with two gateway workers (`gatewayWorkers: 2`, src/server/workers.ts). */
process.env.FERRY_TEST_GATEWAY_WORKERS = '2';
await import('./simulator-api.test.js');
