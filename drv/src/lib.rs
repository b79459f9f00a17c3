//! Raw kernel interfaces for AMD Strix Halo: `/dev/kfd`, the amdgpu render node,
//! `/dev/accel/accel*` (amdxdna) and `/dev/udmabuf`. No math lives here.
