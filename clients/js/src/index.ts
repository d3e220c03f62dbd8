/** msgsync's TypeScript SDK. Node's durable store is in "msgsync-client/file-store". */
export { Acker } from "./acker.js";
export { Api } from "./api.js";
export { Backoff, sleep } from "./backoff.js";
export { Client, defaultOptions, type Handlers, type Options, type SyncResult } from "./client.js";
export * from "./errors.js";
export { IndexedDbStore } from "./idb-store.js";
export { MemoryStore, Store, type Applied, type Change } from "./store.js";
export * from "./types.js";
