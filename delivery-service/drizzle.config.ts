import { defineConfig } from "drizzle-kit";

// Code-first: `npx drizzle-kit generate --config delivery-service/drizzle.config.ts` writes SQL
// migrations into delivery-service/drizzle/, applied at start. (push/pull do not work on MariaDB.)
export default defineConfig({
  dialect: "mysql",
  schema: "./delivery-service/src/db/schema.ts",
  out: "./delivery-service/drizzle",
});
