import { createLogger } from "@shop/platform/logger";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
import { initTracing } from "@shop/platform/tracing";
import { loadPaymentServiceConfig, type PaymentServiceConfig } from "./config.js";
import { startPaymentService } from "./service.js";

const logger = createLogger("payment-service");

function loadConfigOrDie(): PaymentServiceConfig {
  try {
    return loadPaymentServiceConfig();
  } catch (err) {
    dieOnStartupError(logger, err);
  }
}

const config = loadConfigOrDie();

try {
  const tracing = await initTracing({ serviceName: "payment-service", logger });
  const service = await startPaymentService({ ...config, logger });
  exitOnSignals(logger, async () => {
    await service.stop();
    await tracing.shutdown();
  });
} catch (err) {
  dieOnStartupError(logger, err);
}
