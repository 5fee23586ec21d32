/**
 * The delivery service as a process, as delivery-service/src/main.ts starts
 * it, plus one test carrier: "slow", the delayed carrier's schedule behind
 * calls that each take SLOW_CARRIER_CALL_MS (default 400) before they answer,
 * so that the carrier worker always has calls in flight and a kill -9 lands
 * in the middle of them. Like the delayed carrier it keeps no state: every
 * answer follows from the shipment and the clock, so a call repeated after a
 * crash says the same.
 */
import { createLogger } from "@shop/platform/logger";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
import { DelayedCarrier } from "../../delivery-service/src/carriers/delayed.js";
import type { CarrierContext, CarrierPlugin, CarrierReport, Shipment } from "../../delivery-service/src/carriers/plugin.js";
import { loadDeliveryServiceConfig } from "../../delivery-service/src/config.js";
import { startDeliveryService } from "../../delivery-service/src/service.js";

/** cluster.ts's SLOW_CARRIER (not imported from there: this file is a process entry and loads nothing of the tests). */
const SLOW_CARRIER = "slow";

class SlowCarrier implements CarrierPlugin {
  readonly name = SLOW_CARRIER;
  readonly takesRpcReports = false;
  private readonly inner: DelayedCarrier;

  constructor(
    times: ConstructorParameters<typeof DelayedCarrier>[0],
    private readonly callMs: number,
  ) {
    this.inner = new DelayedCarrier(times);
  }

  /** Waits callMs, or gives up when the worker aborts the call (its timeout, or the worker stopping). */
  private wait(ctx: CarrierContext): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, this.callMs);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(new Error("slow carrier call aborted"));
      });
    });
  }

  async accept(shipment: Shipment, ctx: CarrierContext): Promise<CarrierReport[]> {
    await this.wait(ctx);
    return this.inner.accept();
  }

  async poll(shipment: Shipment, ctx: CarrierContext): Promise<CarrierReport[]> {
    await this.wait(ctx);
    return this.inner.poll(shipment, ctx);
  }
}

const logger = createLogger("delivery-service");
try {
  const config = loadDeliveryServiceConfig();
  const callMs = Number(process.env.SLOW_CARRIER_CALL_MS ?? 400);
  const service = await startDeliveryService({ ...config, logger, extraCarriers: [new SlowCarrier(config.carriers.delayed, callMs)] });
  logger.info({ callMs }, `test carrier ${SLOW_CARRIER} registered: every call takes ${callMs} ms`);
  exitOnSignals(logger, () => service.stop());
} catch (err) {
  dieOnStartupError(logger, err);
}
