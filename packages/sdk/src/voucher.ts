// The voucher service's generated types and service descriptor.
export * from "./gen/shop/voucher/v1/voucher_pb.js";
