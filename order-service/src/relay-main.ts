import { envReader } from "@shop/platform/config";
import { createPool, waitForDatabase } from "@shop/platform/db";
import { createLogger } from "@shop/platform/logger";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
import { createVoucherClient } from "@shop/sdk/clients";
import { migrateOrderDatabase } from "./db/migrate.js";
import { Relay, relayConfigFromEnv } from "./outbox/relay.js";

/**
 * The outbox relay as its own process, for draining the outbox with more (or
 * fewer) replicas than the order service runs. It competes safely with the
 * relays inside order-service processes and with other copies of itself.
 */
async function main(): Promise<void> {
  const logger = createLogger("order-relay");
  try {
    const env = envReader();
    const databaseUrl = env.databaseUrl("ORDER_DATABASE_URL");
    const voucherUrl = env.string("VOUCHER_SERVICE_URL", "http://127.0.0.1:50052");
    if (!/^https?:\/\/[^/]+/.test(voucherUrl)) env.problem(`VOUCHER_SERVICE_URL=${JSON.stringify(voucherUrl)} must look like http://host:port`);
    const relayId = env.optionalString("RELAY_ID");
    const config = relayConfigFromEnv(env);
    env.finish();

    // One connection per loop, plus one so a claim never waits behind an ack.
    const pool = createPool({ url: databaseUrl, connectionLimit: config.concurrency + 1 });
    await waitForDatabase(pool, logger);
    await migrateOrderDatabase(pool, logger);

    const voucher = createVoucherClient({ baseUrl: voucherUrl, defaultTimeoutMs: config.callTimeoutMs });
    const relay = new Relay({ pool, voucher: voucher.client, logger, config, relayId });
    relay.start();
    logger.info({ voucherUrl }, "order relay running");

    exitOnSignals(logger, async () => {
      await relay.stop();
      voucher.close();
      await pool.end();
    });
  } catch (err) {
    dieOnStartupError(logger, err);
  }
}

await main();
