// @shop/engine: the delivery engine every flow runs on. A flow is an outbox table, a row type and a deliver
// function; the engine claims, leases, acks, retries, buries and cleans up rows for it. A receiving service
// records each message's key in its inbox in the same transaction as the effect (inbox.ts).
export {};
