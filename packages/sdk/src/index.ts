// The SDK's main entry: the clients, and the services' descriptors, messages
// and enums. The per-service subpaths (@shop/sdk/order, @shop/sdk/order-admin,
// @shop/sdk/voucher) export the same messages under their proto names.
export * from "./clients.js";
export * from "./order.js";
export * from "./order-admin.js";
export * from "./voucher.js";
// Both services define a VoucherStatus. Here the name is the voucher
// service's (the status of a Voucher: ISSUED, VOIDED); the order service's
// (an order's voucher delivery: NOT_ELIGIBLE, PENDING, ISSUED, DEAD) is
// OrderVoucherStatus. An explicit export takes precedence over export *.
export { VoucherStatus, VoucherStatusSchema } from "./voucher.js";
export { VoucherStatus as OrderVoucherStatus, VoucherStatusSchema as OrderVoucherStatusSchema } from "./order.js";
// The same copies the clients use, so that a caller needs no direct dependency
// on the libraries and `instanceof ConnectError` holds for the errors thrown.
export { create, fromJson, toJson, type MessageInitShape } from "@bufbuild/protobuf";
export { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
export { Code, ConnectError } from "@connectrpc/connect";
