//! `seaweed-rdma-sidecar`: the sidecar as a plain binary, for volume-server hosts without
//! Python. Same arguments as `seaweed-rdma sidecar`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(seaweed_rdma::sidecar::run(args));
}
