// The failure classification is the engine's (one rule for every flow and the reconciler); the hint is the voucher flow's.
export { classifyCallError, classifyCode, codeName, failureCause, type FailureCause, type FailureKind } from "@shop/engine/classify";
export { misconfigurationHint } from "./voucher-flow.js";
