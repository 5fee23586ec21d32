import { createLogger } from "@shop/platform/logger";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
import { initTracing } from "@shop/platform/tracing";
import { loadDeliveryServiceConfig, type DeliveryServiceConfig } from "./config.js";
import { startDeliveryService } from "./service.js";

const logger = createLogger("delivery-service");

function loadConfigOrDie(): DeliveryServiceConfig {
  try {
    return loadDeliveryServiceConfig();
  } catch (err) {
    dieOnStartupError(logger, err);
  }
}

const config = loadConfigOrDie();

try {
  const tracing = await initTracing({ serviceName: "delivery-service", logger });
  const service = await startDeliveryService({ ...config, logger });
  exitOnSignals(logger, async () => {
    await service.stop();
    await tracing.shutdown();
  });
} catch (err) {
  dieOnStartupError(logger, err);
}
