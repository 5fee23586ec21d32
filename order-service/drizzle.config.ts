import { defineConfig } from "drizzle-kit";

// Code-first: `npx drizzle-kit generate --config order-service/drizzle.config.ts` writes SQL
// migrations into order-service/drizzle/, applied at start. (push/pull do not work on MariaDB.)
export default defineConfig({
  dialect: "mysql",
  schema: "./order-service/src/db/schema.ts",
  out: "./order-service/drizzle",
});
