//! One file per attach point.
mod lan_egress;
mod wan_egress;
