// The order service's generated types and service descriptor.
export * from "./gen/shop/order/v1/order_pb.js";
