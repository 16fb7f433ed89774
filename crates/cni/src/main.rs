//! `ovs-egress-cni`: the CNI plugin binary the kubelet (container runtime) runs once per Pod
//! operation, installed in the CNI bin directory under the network's `type`, `ovs-egress`.

fn main() {
    std::process::exit(ovs_egress_cni::main());
}
