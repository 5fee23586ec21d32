// The delivery service's generated types and service descriptors.
export * from "./gen/shop/delivery/v1/delivery_pb.js";
