//! One file per attach point.
mod ct_free;
mod ct_free_kprobe;
mod lan_egress;
mod wan_egress;
