import { createLogger } from "@shop/platform/logger";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
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
  const service = await startVoucherService({ ...config, logger });
  exitOnSignals(logger, () => service.stop());
} catch (err) {
  dieOnStartupError(logger, err);
}
