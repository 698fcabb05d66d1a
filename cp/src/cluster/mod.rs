//! Cluster listener: CA, TLS and the gRPC services.
