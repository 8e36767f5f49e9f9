//! Compiles the CNPG-I protocol files in proto/ (needs `protoc`: Debian's
//! protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/identity.proto",
        "proto/wal.proto",
        "proto/restore_job.proto",
        "proto/backup.proto",
        "proto/operator_lifecycle.proto",
        "proto/metrics.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&files, &["proto"])?;
    Ok(())
}
