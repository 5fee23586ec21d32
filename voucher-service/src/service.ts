import { startDatabaseService, type DatabaseServiceOptions, type RunningDatabaseService } from "@shop/platform/database-service";
import { VoucherService } from "@shop/sdk/voucher";
import { VOUCHER_MIGRATIONS } from "./db/migrate.js";
import { VoucherStore } from "./db/voucher-store.js";
import { VOUCHER_SERVICE_ACCESS } from "./grpc/access.js";
import { createVoucherServiceImpl } from "./grpc/routes.js";
import { createVoucherMetrics, type VoucherMetrics } from "./metrics.js";
import { createVouchers } from "./vouchers.js";

export interface VoucherServiceOptions extends DatabaseServiceOptions {
  /** Items per BatchIssueVouchers call. Default 1000. */
  maxBatch?: number;
}

export type RunningVoucherService = RunningDatabaseService<VoucherMetrics>;

/**
 * Starts the whole service in this process: pool, wait for the database,
 * migrations, servers. main.ts runs it; other packages' tests run it in-process.
 */
export function startVoucherService(opts: VoucherServiceOptions): Promise<RunningVoucherService> {
  return startDatabaseService(opts, VOUCHER_MIGRATIONS, (pool) => {
    const store = new VoucherStore(pool);
    const vouchers = createVouchers({ store, logger: opts.logger, maxBatch: opts.maxBatch });
    const metrics = createVoucherMetrics();
    return {
      services: [{ service: VoucherService, impl: createVoucherServiceImpl({ vouchers, issued: metrics.issued }), access: VOUCHER_SERVICE_ACCESS }],
      metrics,
      isReady: () => store.ping().then(() => true),
    };
  });
}
