import { defineConfig } from "drizzle-kit";

// Code-first: `npx drizzle-kit generate --config voucher-service/drizzle.config.ts` writes SQL
// migrations into voucher-service/drizzle/, applied at start. (push/pull do not work on MariaDB.)
export default defineConfig({
  dialect: "mysql",
  schema: "./voucher-service/src/db/schema.ts",
  out: "./voucher-service/drizzle",
});
