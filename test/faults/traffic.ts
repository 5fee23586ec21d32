import { Code, ConnectError } from "@connectrpc/connect";
import type { OrderClient } from "@shop/sdk/clients";
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
  return { orderIds: [], acknowledgedSent: [], cancelled: [], facts: new Map() };
}
