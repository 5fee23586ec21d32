/**
 * What the gateway lets through from outside, derived from the services' own
 * access tables so that the two cannot drift: an RPC is routed at the edge
 * when a caller that lives outside the system (the shop backend, a customer,
 * a carrier) holds one of the scopes that let a caller in; every other RPC
 * (vouchers issued by the relay, charges and refunds, the payment outcome and
 * shipment event callbacks, shipment creation, the admin calls, requeues) is
 * for callers inside the system, which reach the services directly, and the
 * gateway answers it as if it did not exist.
 */
import { ROLES, type AccessRule, type Role, type Scope } from "@shop/platform/auth";
import { CARRIER_SERVICE_ACCESS, DELIVERY_SERVICE_ACCESS } from "@shop/delivery-service/grpc/access";
import { ORDER_ADMIN_ACCESS, ORDER_SERVICE_ACCESS, PAYMENT_OUTCOME_ACCESS, SHIPMENT_EVENT_ACCESS } from "@shop/order-service/grpc/access";
import { PAYMENT_SERVICE_ACCESS } from "@shop/payment-service/grpc/access";
import { VOUCHER_SERVICE_ACCESS } from "@shop/voucher-service/grpc/access";
import { CarrierService, DeliveryService } from "@shop/sdk/delivery";
import { OrderService, PaymentOutcomeService, ShipmentEventService } from "@shop/sdk/order";
import { OrderAdminService } from "@shop/sdk/order-admin";
import { PaymentService } from "@shop/sdk/payment";
import { VoucherService } from "@shop/sdk/voucher";

/** The services behind the gateway, each one upstream (a set of replicas). */
export const UPSTREAMS = ["order", "voucher", "payment", "delivery"] as const;
export type UpstreamName = (typeof UPSTREAMS)[number];

/** The callers outside the system: what their tokens may do is what the gateway routes. */
export const EDGE_ROLES: readonly Role[] = ["shop", "customer", "carrier"];

export interface EdgeMethod {
  /** As on the wire: "CreateOrder". */
  name: string;
  /** Routed from outside (true), or answered "unimplemented" at the edge (false). */
  routed: boolean;
}

export interface EdgeService {
  /** The full proto name: "shop.order.v1.OrderService"; requests go to /<typeName>/<Method>. */
  typeName: string;
  upstream: UpstreamName;
  methods: EdgeMethod[];
}

interface ServiceDescriptor {
  typeName: string;
  method: Record<string, { name: string }>;
}

const edgeScopes: ReadonlySet<Scope> = new Set(EDGE_ROLES.flatMap((role) => ROLES[role].scopes));

/** Whether a caller outside the system may call a method with this rule. */
export function routedAtEdge(rule: AccessRule): boolean {
  return [...rule.scopes, ...(rule.customerScope ? [rule.customerScope] : [])].some((s) => edgeScopes.has(s));
}

function edgeService(upstream: UpstreamName, service: ServiceDescriptor, access: Record<string, AccessRule>): EdgeService {
  return {
    typeName: service.typeName,
    upstream,
    methods: Object.entries(service.method).map(([localName, m]) => {
      const rule = access[localName];
      // The access tables are typed to have every method; this guards a table built some other way.
      if (!rule) throw new Error(`${service.typeName}/${m.name} has no access rule`);
      return { name: m.name, routed: routedAtEdge(rule) };
    }),
  };
}

/** Every service of the system, with which of its methods the gateway routes. */
export const EDGE_SERVICES: readonly EdgeService[] = [
  edgeService("order", OrderService, ORDER_SERVICE_ACCESS),
  edgeService("order", OrderAdminService, ORDER_ADMIN_ACCESS),
  edgeService("order", PaymentOutcomeService, PAYMENT_OUTCOME_ACCESS),
  edgeService("order", ShipmentEventService, SHIPMENT_EVENT_ACCESS),
  edgeService("voucher", VoucherService, VOUCHER_SERVICE_ACCESS),
  edgeService("payment", PaymentService, PAYMENT_SERVICE_ACCESS),
  edgeService("delivery", DeliveryService, DELIVERY_SERVICE_ACCESS),
  edgeService("delivery", CarrierService, CARRIER_SERVICE_ACCESS),
];

/** "shop.order.v1.OrderService/CreateOrder" for every routed method. */
export function routedMethods(services: readonly EdgeService[] = EDGE_SERVICES): string[] {
  return services.flatMap((s) => s.methods.filter((m) => m.routed).map((m) => `${s.typeName}/${m.name}`));
}

/** "shop.voucher.v1.VoucherService/IssueVoucher" for every method kept inside. */
export function internalMethods(services: readonly EdgeService[] = EDGE_SERVICES): string[] {
  return services.flatMap((s) => s.methods.filter((m) => !m.routed).map((m) => `${s.typeName}/${m.name}`));
}
