import { Code, ConnectError } from "@connectrpc/connect";
import type { CarrierClient, DeliveryClient, OrderClient, PaymentClient } from "@shop/sdk/clients";
import { OrderStatus, PaymentMethod } from "@shop/sdk/order";
import { sleep } from "./cluster.js";

/** Codes a well-behaved client retries: the call may or may not have happened, and every call here is idempotent. */
const RETRYABLE = new Set<Code>([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.Internal,
  Code.Unknown,
  Code.Canceled,
  Code.Aborted,
  Code.ResourceExhausted,
]);

/** Retries fn on transport trouble (a crashed or restarting service) until it answers or `forMs` passes. */
export async function withRetry<T>(fn: () => Promise<T>, forMs = 60_000): Promise<T> {
  const deadline = Date.now() + forMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      const code = ConnectError.from(err).code;
      if (!RETRYABLE.has(code) || Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

/** Totals around the 100.00 EUR line (both sides and the line itself) and far from it. */
export function totalFor(i: number, random: () => number = Math.random): bigint {
  const edges = [9_999n, 10_000n, 10_001n, 1n, 10_000_000n];
  return i < edges.length ? edges[i]! : BigInt(1 + Math.floor(random() * 20_000));
}

export interface TrafficOptions {
  count: number;
  /** Unique per test: request ids derive from it, so a retried CreateOrder finds its order. */
  prefix: string;
  concurrency?: number;
  /** Cancel every n-th order instead of sending it (0: none). Default 7. */
  cancelEvery?: number;
}

export interface Traffic {
  orderIds: string[];
  /** Orders whose MarkOrderSent returned OK (I6). */
  acknowledgedSent: string[];
  cancelled: string[];
  /** What each order was created with, for the tests' own statement of the rule. */
  facts: Map<string, { customerId: string; totalCents: bigint }>;
  /** Paid orders (payment method ACCOUNT) and how each ended as the test saw it. */
  payments: Map<string, PaidOrder>;
  /** customer → the sum of their top-ups that returned OK (each request id applied once). */
  funding: Map<string, bigint>;
  /** Orders shipped through the delivery service and how each ended as the test saw it. */
  shipping: Map<string, ShippedOrder>;
}

/**
 * How an order given to the delivery service ended, from the client's side:
 * delivered (the order reached DELIVERED, sent by its shipment), declined
 * (the carrier declined, the order CANCELLED), refused (its payment was
 * refused, so it never went to shipping).
 */
export interface ShippedOrder {
  customerId: string;
  totalCents: bigint;
  paid: boolean;
  /** The carrier asked for ("" for the delivery service's default). */
  carrier: string;
  end: "delivered" | "declined" | "refused";
  /** For declined: the reason the shipment was declined with. */
  declineReason?: string;
}

/**
 * How a paid order ended, from the client's side: sent (MarkOrderSent
 * returned OK after it was PAID), paid (left PAID), refused (PAYMENT_FAILED),
 * cancelled-paid (cancelled once PAID: refunded), cancelled-awaiting
 * (cancelled before the outcome was known: refunded if it was charged).
 */
export interface PaidOrder {
  customerId: string;
  totalCents: bigint;
  end: "sent" | "paid" | "refused" | "cancelled-paid" | "cancelled-awaiting";
}

/**
 * Creates orders and marks them sent (a few are cancelled instead), the way a
 * real client does it: each call is retried while the service is down, a
 * MarkOrderSent whose reply was lost included. Progress is visible in `out`
 * while it runs, so a test can strike once the traffic is under way.
 */
export async function driveTraffic(orders: OrderClient, opts: TrafficOptions, out: Traffic = newTraffic()): Promise<Traffic> {
  const cancelEvery = opts.cancelEvery ?? 7;
  let next = 0;
  await Promise.all(
    Array.from({ length: opts.concurrency ?? 8 }, async () => {
      while (next < opts.count) {
        const i = next++;
        // Fixed before the first attempt: a retry must repeat the request exactly, or it is a conflicting reuse of its request_id.
        const request = { customerId: `cust-${i % 11}`, totalCents: totalFor(i), currency: "EUR", requestId: `${opts.prefix}-${i}` };
        const { order } = await withRetry(() => orders.createOrder(request));
        const id = order!.id;
        out.orderIds.push(id);
        out.facts.set(id, { customerId: request.customerId, totalCents: request.totalCents });
        if (cancelEvery > 0 && i % cancelEvery === cancelEvery - 1) {
          await withRetry(() => orders.cancelOrder({ orderId: id }));
          out.cancelled.push(id);
        } else {
          await withRetry(() => orders.markOrderSent({ orderId: id }));
          out.acknowledgedSent.push(id);
        }
      }
    }),
  );
  return out;
}

/** An empty record of traffic, to pass to driveTraffic and watch while it runs. */
export function newTraffic(): Traffic {
  return { orderIds: [], acknowledgedSent: [], cancelled: [], facts: new Map(), payments: new Map(), funding: new Map(), shipping: new Map() };
}

/** Tops a customer up once per request id (retried through outages), opening the account first; counted in t.funding. */
export async function topUp(payments: PaymentClient, t: Traffic, customerId: string, amountCents: bigint, requestId: string, forMs = 60_000): Promise<void> {
  await withRetry(() => payments.openAccount({ customerId, currency: "EUR" }), forMs);
  await withRetry(() => payments.topUp({ customerId, amountCents, currency: "EUR", requestId }), forMs);
  t.funding.set(customerId, (t.funding.get(customerId) ?? 0n) + amountCents);
}

/** Polls the order until its payment is decided (no longer AWAITING_PAYMENT); throws after forMs. */
export async function awaitPayment(orders: OrderClient, orderId: string, forMs = 60_000): Promise<OrderStatus> {
  const deadline = Date.now() + forMs;
  for (;;) {
    const { order } = await withRetry(() => orders.getOrder({ orderId }), forMs);
    if (order!.status !== OrderStatus.AWAITING_PAYMENT) return order!.status;
    if (Date.now() > deadline) throw new Error(`${orderId} still AWAITING_PAYMENT after ${forMs} ms`);
    await sleep(100);
  }
}

export interface PaidTrafficOptions {
  count: number;
  /** Unique per test, at most 40 characters: customer and request ids (orders and top-ups) derive from it. */
  prefix: string;
  concurrency?: number;
  /** Customers the orders are spread over; each is opened and topped up first. Default 4. */
  customers?: number;
  /** Each customer's first top-up, in cents. Default 60000 (enough for about half of the orders of a run of 100). */
  fundCents?: bigint;
  /** Cancel every n-th order right after creating it, before its outcome is known (0: none). Default 9. */
  cancelAwaitingEvery?: number;
  /** Cancel every n-th order once it is PAID, instead of sending it (0: none). Default 5. */
  cancelPaidEvery?: number;
  /** Top the customer up again (a new request id) with every n-th order (0: none). Default 10. */
  topUpEvery?: number;
  /** How long one order may take end to end through the faults. Default 60000 ms. */
  orderTimeoutMs?: number;
}

/**
 * Paid orders as a shop drives them: customers' accounts opened and topped
 * up, then orders paid from the account; each waits for its outcome and is
 * then sent (a few cancelled instead, which refunds them), or cancelled at
 * once before the outcome is known; more top-ups along the way. Every call
 * is retried through outages with the same request, so each is applied once.
 * Orders are spread over the customers round robin, totals from 1.00 to
 * 250.00 EUR (some over the voucher line), so some are refused for funds.
 */
export async function drivePaidTraffic(orders: OrderClient, payments: PaymentClient, opts: PaidTrafficOptions, out: Traffic = newTraffic()): Promise<Traffic> {
  const customers = Array.from({ length: opts.customers ?? 4 }, (_, k) => `${opts.prefix}-payer-${k}`);
  const forMs = opts.orderTimeoutMs ?? 60_000;
  for (const [k, c] of customers.entries()) await topUp(payments, out, c, opts.fundCents ?? 60_000n, `${opts.prefix}-fund-${k}`, forMs);
  const cancelAwaiting = opts.cancelAwaitingEvery ?? 9;
  const cancelPaid = opts.cancelPaidEvery ?? 5;
  const topUpEvery = opts.topUpEvery ?? 10;
  let next = 0;
  await Promise.all(
    Array.from({ length: opts.concurrency ?? 8 }, async () => {
      while (next < opts.count) {
        const i = next++;
        const customerId = customers[i % customers.length]!;
        const totalCents = BigInt(100 + ((i * 7_919) % 24_901));
        const request = { customerId, totalCents, currency: "EUR", requestId: `${opts.prefix}-${i}`, paymentMethod: PaymentMethod.ACCOUNT };
        const { order } = await withRetry(() => orders.createOrder(request), forMs);
        const id = order!.id;
        out.orderIds.push(id);
        out.facts.set(id, { customerId, totalCents });
        const record = (end: PaidOrder["end"]) => out.payments.set(id, { customerId, totalCents, end });
        if (topUpEvery > 0 && i % topUpEvery === topUpEvery - 1) await topUp(payments, out, customerId, 5_000n, `${opts.prefix}-topup-${i}`, forMs);
        if (cancelAwaiting > 0 && i % cancelAwaiting === cancelAwaiting - 1) {
          await withRetry(() => orders.cancelOrder({ orderId: id }), forMs);
          out.cancelled.push(id);
          record("cancelled-awaiting");
          continue;
        }
        const status = await awaitPayment(orders, id, forMs);
        if (status === OrderStatus.PAYMENT_FAILED) {
          record("refused");
        } else if (status !== OrderStatus.PAID) {
          throw new Error(`${id}: ${OrderStatus[status]} after AWAITING_PAYMENT, want PAID or PAYMENT_FAILED`);
        } else if (cancelPaid > 0 && i % cancelPaid === cancelPaid - 1) {
          await withRetry(() => orders.cancelOrder({ orderId: id }), forMs);
          out.cancelled.push(id);
          record("cancelled-paid");
        } else {
          await withRetry(() => orders.markOrderSent({ orderId: id }), forMs);
          out.acknowledgedSent.push(id);
          record("sent");
        }
      }
    }),
  );
  return out;
}

/** How the paid orders of a run ended, for the verbose log: "40 paid orders: sent 20, refused 9, …". */
export function tally(t: Traffic): string {
  const ends: Record<string, number> = {};
  for (const p of t.payments.values()) ends[p.end] = (ends[p.end] ?? 0) + 1;
  return `${t.payments.size} paid orders: ${Object.entries(ends).map(([k, v]) => `${k} ${v}`).join(", ")}`;
}

/** How the test drives one shipped order. */
export type ShipPlan =
  /** Paid from the account; the order service releases it when PAID; the delayed carrier delivers it. */
  | "paid-delayed"
  /** Without payment, released by ReleaseOrderForShipping; the delayed carrier delivers it. */
  | "unpaid-delayed"
  /** Paid, manual carrier: confirmed, shipped, delivered over CarrierService. */
  | "paid-manual-deliver"
  /** Without payment, manual carrier: marked delivered at once (the skipped steps recorded on the way). */
  | "unpaid-manual-jump"
  /** Paid, manual carrier: confirmed, then declined (the order cancelled and refunded). */
  | "paid-manual-decline"
  /** Without payment, manual carrier: declined at once. */
  | "unpaid-manual-decline"
  /** Paid, a carrier the delivery service does not know: declined UNKNOWN_CARRIER at once, refunded. */
  | "paid-unknown-carrier";

export const UNKNOWN_CARRIER = "no-such-carrier";

/** The default mix: mostly the delayed carrier, every kind of manual handling, and an unknown carrier now and then. */
export function defaultShipPlan(i: number): ShipPlan {
  const mix: ShipPlan[] = ["paid-delayed", "unpaid-delayed", "paid-manual-deliver", "paid-delayed", "unpaid-manual-jump", "paid-manual-decline", "paid-delayed", "unpaid-manual-decline", "unpaid-delayed", "paid-delayed", "paid-unknown-carrier", "paid-delayed"];
  return mix[i % mix.length]!;
}

export interface ShippingTrafficOptions {
  count: number;
  /** Unique per test, at most 40 characters: customer and request ids derive from it. */
  prefix: string;
  concurrency?: number;
  /** Customers the orders are spread over; each is opened and topped up first. Default 4. */
  customers?: number;
  /** Each customer's top-up, in cents. Default 100000000 (1 000 000 EUR: no order is refused for funds). */
  fundCents?: bigint;
  /** How order i is driven. Default defaultShipPlan. */
  plan?: (i: number) => ShipPlan;
  /** The carrier the "-delayed" plans ask for. Default "" (the delivery service's default carrier, delayed). */
  delayedCarrier?: string;
  /** How long one order may take end to end through the faults. Default 60000 ms. */
  orderTimeoutMs?: number;
}

export interface ShippingClients {
  orders: OrderClient;
  payments: PaymentClient;
  deliveries: DeliveryClient;
  carriers: CarrierClient;
}

/** Polls until fn returns a value (not undefined); every call retried through outages; throws after forMs naming `what`. */
async function until<T>(fn: () => Promise<T | undefined>, forMs: number, what: () => string): Promise<T> {
  const deadline = Date.now() + forMs;
  for (;;) {
    const v = await withRetry(fn, forMs);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what()} after ${forMs} ms`);
    await sleep(100);
  }
}

/** Waits until the delivery service has the order's shipment (NOT_FOUND until the order relay's CreateShipment lands). */
export async function awaitShipment(deliveries: DeliveryClient, orderId: string, forMs = 60_000): Promise<void> {
  await until(
    async () => {
      try {
        return (await deliveries.getShipment({ orderId })).shipment;
      } catch (err) {
        if (ConnectError.from(err).code === Code.NotFound) return undefined;
        throw err;
      }
    },
    forMs,
    () => `${orderId}: no shipment`,
  );
}

/** Waits until the order is in one of the statuses; returns it. */
export async function awaitOrderStatus(orders: OrderClient, orderId: string, want: OrderStatus[], forMs = 60_000): Promise<OrderStatus> {
  let last: OrderStatus | undefined;
  return until(
    async () => {
      last = (await orders.getOrder({ orderId })).order!.status;
      return want.includes(last) ? last : undefined;
    },
    forMs,
    () => `${orderId}: ${last === undefined ? "never read" : OrderStatus[last]}, waited for ${want.map((s) => OrderStatus[s]).join(" or ")}`,
  );
}

/**
 * Orders shipped through the delivery service as a shop and its carriers
 * drive them: paid ones (customers' accounts opened and topped up first)
 * released by the order service when PAID, orders without payment released
 * by ReleaseOrderForShipping, the delayed carrier shipping and delivering on
 * its own, the manual carrier's shipments confirmed, shipped, delivered or
 * declined over CarrierService. Each order is followed until it ends
 * (DELIVERED, or CANCELLED for a declined one); every call is retried through
 * outages with the same request, so each is applied once. A delivered order
 * counts as acknowledged sent (its voucher is owed when over 100 EUR); a paid
 * one is recorded in `payments` (delivered: "sent", declined:
 * "cancelled-paid").
 */
export async function driveShippingTraffic(c: ShippingClients, opts: ShippingTrafficOptions, out: Traffic = newTraffic()): Promise<Traffic> {
  const customers = Array.from({ length: opts.customers ?? 4 }, (_, k) => `${opts.prefix}-buyer-${k}`);
  const forMs = opts.orderTimeoutMs ?? 60_000;
  for (const [k, cust] of customers.entries()) await topUp(c.payments, out, cust, opts.fundCents ?? 100_000_000n, `${opts.prefix}-fund-${k}`, forMs);
  const plan = opts.plan ?? defaultShipPlan;
  let next = 0;
  await Promise.all(
    Array.from({ length: opts.concurrency ?? 8 }, async () => {
      while (next < opts.count) {
        const i = next++;
        await shipOne(c, out, plan(i), {
          customerId: customers[i % customers.length]!,
          totalCents: totalFor(i, () => ((i * 7_919) % 1_000) / 1_000),
          requestId: `${opts.prefix}-${i}`,
          forMs,
          delayedCarrier: opts.delayedCarrier,
        });
      }
    }),
  );
  return out;
}

/** Drives one order through its plan (see ShipPlan) and records how it ended in `out`. */
export async function shipOne(
  c: ShippingClients,
  out: Traffic,
  plan: ShipPlan,
  o: { customerId: string; totalCents: bigint; requestId: string; forMs?: number; delayedCarrier?: string },
): Promise<string> {
  const forMs = o.forMs ?? 60_000;
  const paid = plan.startsWith("paid-");
  const carrier = plan.includes("manual") ? "manual" : plan === "paid-unknown-carrier" ? UNKNOWN_CARRIER : (o.delayedCarrier ?? "");
  // Unpaid ones name their carrier at CreateOrder or at the release, by the parity of the request id's last character.
  const carrierAtCreate = paid || o.requestId.charCodeAt(o.requestId.length - 1) % 2 === 0;
  const request = {
    customerId: o.customerId,
    totalCents: o.totalCents,
    currency: "EUR",
    requestId: o.requestId,
    paymentMethod: paid ? PaymentMethod.ACCOUNT : PaymentMethod.UNSPECIFIED,
    carrier: carrierAtCreate ? carrier : "",
  };
  const { order } = await withRetry(() => c.orders.createOrder(request), forMs);
  const id = order!.id;
  out.orderIds.push(id);
  out.facts.set(id, { customerId: o.customerId, totalCents: o.totalCents });
  const record = (end: ShippedOrder["end"], declineReason?: string) => {
    out.shipping.set(id, { customerId: o.customerId, totalCents: o.totalCents, paid, carrier, end, declineReason });
    if (end === "delivered") out.acknowledgedSent.push(id);
    if (paid) out.payments.set(id, { customerId: o.customerId, totalCents: o.totalCents, end: end === "delivered" ? "sent" : end === "declined" ? "cancelled-paid" : "refused" });
  };
  if (paid) {
    // With SHIP_PAID_ORDERS the charge that makes the order PAID releases it; it may be well on its way by now.
    if ((await awaitPayment(c.orders, id, forMs)) === OrderStatus.PAYMENT_FAILED) {
      record("refused");
      return id;
    }
  } else {
    await withRetry(() => c.orders.releaseOrderForShipping({ orderId: id, carrier: carrierAtCreate ? "" : carrier }), forMs);
  }
  const declineWith = (reason: string) => withRetry(() => c.carriers.declineShipment({ orderId: id, reason }), forMs);
  switch (plan) {
    case "paid-delayed":
    case "unpaid-delayed":
      break;
    case "paid-manual-deliver":
      await awaitShipment(c.deliveries, id, forMs);
      await withRetry(() => c.carriers.confirmShipment({ orderId: id }), forMs);
      await withRetry(() => c.carriers.markShipmentShipped({ orderId: id, trackingNumber: `TRK-${o.requestId}` }), forMs);
      await withRetry(() => c.carriers.markShipmentDelivered({ orderId: id }), forMs);
      break;
    case "unpaid-manual-jump":
      await awaitShipment(c.deliveries, id, forMs);
      await withRetry(() => c.carriers.markShipmentDelivered({ orderId: id }), forMs);
      break;
    case "paid-manual-decline":
      await awaitShipment(c.deliveries, id, forMs);
      await withRetry(() => c.carriers.confirmShipment({ orderId: id }), forMs);
      await declineWith("NO_CAPACITY");
      break;
    case "unpaid-manual-decline":
      await awaitShipment(c.deliveries, id, forMs);
      await declineWith("ADDRESS_UNREACHABLE");
      break;
    case "paid-unknown-carrier":
      break;
  }
  const declined = plan.endsWith("decline") || plan === "paid-unknown-carrier";
  await awaitOrderStatus(c.orders, id, [declined ? OrderStatus.CANCELLED : OrderStatus.DELIVERED], forMs);
  record(
    declined ? "declined" : "delivered",
    plan === "paid-unknown-carrier" ? "UNKNOWN_CARRIER" : plan === "paid-manual-decline" ? "NO_CAPACITY" : plan === "unpaid-manual-decline" ? "ADDRESS_UNREACHABLE" : undefined,
  );
  return id;
}

/** How the shipped orders of a run ended, for the verbose log. */
export function shippingTally(t: Traffic): string {
  const ends: Record<string, number> = {};
  for (const s of t.shipping.values()) ends[`${s.end}${s.carrier ? ` (${s.carrier})` : ""}`] = (ends[`${s.end}${s.carrier ? ` (${s.carrier})` : ""}`] ?? 0) + 1;
  return `${t.shipping.size} shipped orders: ${Object.entries(ends).map(([k, v]) => `${k} ${v}`).join(", ")}`;
}
