/**
 * @shop/engine: the delivery engine every flow runs on. A flow is an outbox
 * table, a row type and a deliver function (defineFlow); the engine claims,
 * leases, delivers in batches (splitting and falling back per row), acks
 * fenced on the claim, retries with capped jittered backoff, parks dead rows,
 * and cleans up delivered ones. A receiving service records each message's
 * key in its inbox in the same transaction as the effect (inbox.ts).
 *
 * Each module is also importable on its own (@shop/engine/claim, ...).
 */
export { ack, type Ack } from "./ack.js";
export { errorPauseMs, retryDelayMs, type BackoffPolicy } from "./backoff.js";
export { claimDue, type ClaimOptions } from "./claim.js";
export { classifyCallError, classifyCode, codeName, failureCause, type FailureCause, type FailureKind } from "./classify.js";
export {
  OutboxCleanup,
  OUTBOX_CLEANUP_DEFAULTS,
  outboxCleanupConfigFromEnv,
  removeDeliveredBatch,
  type OutboxCleanupConfig,
  type OutboxCleanupDeps,
} from "./cleanup.js";
export { listDead, requeueDead, type DeadRow } from "./dead.js";
export { deliverRows, type CallFailure, type Delivered, type DeliverOptions, type Failed, type Outcome } from "./deliver.js";
export { LAST_ERROR_MAX, markDead, scheduleRetries, truncateError, type Death, type Retry } from "./fail.js";
export {
  checkIdentifier,
  defineFlow,
  ENGINE_COLUMNS,
  IDENTIFIER,
  outboxTableDdl,
  OWN_FAILURE_MARK,
  type AnyFlow,
  type Archive,
  type CallOptions,
  type Claimed,
  type ClaimMeta,
  type Flow,
  type FlowDefinition,
  type FlowSql,
  type FlowTexts,
  type ItemResult,
  type Transport,
} from "./flow.js";
export {
  Relay,
  RELAY_DEFAULTS,
  relayConfigFromEnv,
  relayConfigProblems,
  type DeliveryMetrics,
  type RelayConfig,
  type RelayDeps,
  type RequestLimits,
} from "./relay.js";
export {
  COMMIT_TO_ACK_BUCKETS,
  createDeliveryMetrics,
  registerOutboxGauges,
  type DeliveryMetricNames,
  type MetricName,
  type OutboxGaugeOptions,
  type RegisteredDeliveryMetrics,
} from "./metrics.js";
export { readOutboxStats, type OutboxStats } from "./stats.js";
export { batchOfSingles } from "./singles.js";
