// The order service's admin API: dead voucher deliveries (list, requeue).
export * from "./gen/shop/order/v1/order_admin_pb.js";
