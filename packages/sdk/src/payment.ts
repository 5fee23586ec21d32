// The payment service's generated types and service descriptor.
export * from "./gen/shop/payment/v1/payment_pb.js";
