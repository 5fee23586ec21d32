import { createLogger } from "@shop/platform/logger";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
import { initTracing } from "@shop/platform/tracing";
import { loadVoucherServiceConfig, type VoucherServiceConfig } from "./config.js";
import { startVoucherService } from "./service.js";

const logger = createLogger("voucher-service");

function loadConfigOrDie(): VoucherServiceConfig {
  try {
    return loadVoucherServiceConfig();
  } catch (err) {
    dieOnStartupError(logger, err);
  }
}

const config = loadConfigOrDie();

try {
  const tracing = await initTracing({ serviceName: "voucher-service", logger });
  const service = await startVoucherService({ ...config, logger });
  exitOnSignals(logger, async () => {
    await service.stop();
    await tracing.shutdown();
  });
} catch (err) {
  dieOnStartupError(logger, err);
}
