// The order service's generated types and service descriptor.
export * from "./gen/shop/order/v1/order_pb.js";
// The payment service's callback into the order service (internal: its relay and the reconciler).
export * from "./gen/shop/order/v1/payment_outcome_pb.js";
export * from "./gen/shop/order/v1/shipment_event_pb.js";
