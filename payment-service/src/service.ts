import { startDatabaseService, type DatabaseServiceOptions, type RunningDatabaseService } from "@shop/platform/database-service";
import { PaymentService } from "@shop/sdk/payment";
import { migratePaymentDatabase } from "./db/migrate.js";
import { PAYMENT_SERVICE_ACCESS } from "./grpc/access.js";
import { createPaymentServiceImpl } from "./grpc/routes.js";
import { createPaymentMetrics, type PaymentMetrics } from "./metrics.js";
import { Payments } from "./payments.js";

export type PaymentServiceOptions = DatabaseServiceOptions;

export type RunningPaymentService = RunningDatabaseService<PaymentMetrics>;

/**
 * Starts the whole service in this process: pool, wait for the database,
 * migrations, servers. main.ts runs it; tests run it in-process.
 */
export function startPaymentService(opts: PaymentServiceOptions): Promise<RunningPaymentService> {
  return startDatabaseService(opts, migratePaymentDatabase, (pool) => {
    const payments = new Payments({ pool, logger: opts.logger });
    const metrics = createPaymentMetrics();
    return {
      services: [{ service: PaymentService, impl: createPaymentServiceImpl({ payments, requests: metrics.requests }), access: PAYMENT_SERVICE_ACCESS }],
      metrics,
      isReady: () => payments.ping().then(() => true),
    };
  });
}
