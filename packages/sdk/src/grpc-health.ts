// The standard gRPC health protocol (grpc.health.v1), which both services
// serve on their gRPC port: for health checks from code, and for the servers,
// which publish its descriptor through reflection.
export * from "./gen/grpc/health/v1/health_pb.js";
