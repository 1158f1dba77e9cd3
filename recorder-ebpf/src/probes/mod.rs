//! One file per attach point.
mod ct_free;
mod lan_egress;
mod wan_egress;
