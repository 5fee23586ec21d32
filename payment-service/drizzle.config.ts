import { defineConfig } from "drizzle-kit";

// Code-first: `npx drizzle-kit generate --config payment-service/drizzle.config.ts` writes SQL
// migrations into payment-service/drizzle/, applied at start. (push/pull do not work on MariaDB.)
export default defineConfig({
  dialect: "mysql",
  schema: "./payment-service/src/db/schema.ts",
  out: "./payment-service/drizzle",
});
