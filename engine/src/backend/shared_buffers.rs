//! The shared buffers the device surfaces make, each with what it holds: its name, the
//! surface that makes it, and the descriptor (DRM format and modifier, element type) that
//! the iGPU and NPU importers check. `onebit probe` lists this table; the backends create
//! their buffers from it, so the two cannot disagree.

use onebit_drv::buffer::BufferDescriptor;

/// One kind of shared buffer.
#[derive(Debug, Clone, Copy)]
pub struct SharedBufferKind {
    /// The debug name it is created with (the NPU's weight groups append `-{i}`).
    pub name: &'static str,
    /// The surface that creates it.
    pub surface: &'static str,
    /// What is in it.
    pub holds: &'static str,
    /// Its layout and format.
    pub descriptor: BufferDescriptor,
}

/// The sealed memfd the model file was loaded into, exported as it is: the large weights
/// (packed ternary rows, the token embedding) are read in place by the devices and the
/// CPU alike (a blob of R8 bytes: the file's own layout).
pub const MODEL_FILE: SharedBufferKind = SharedBufferKind {
    name: "onebit-model-file",
    surface: "igpu",
    holds:
        "the model file as loaded (sealed memfd): packed ternary rows and embeddings, read in place",
    descriptor: BufferDescriptor::blob(),
};

/// What the iGPU copies: f32 norms and the RoPE table, and every weight of a model that
/// was not loaded into a memfd (a blob of R8 bytes).
pub const IGPU_WEIGHTS: SharedBufferKind = SharedBufferKind {
    name: "onebit-weights",
    surface: "igpu",
    holds:
        "what the file cannot give in place: norms, RoPE table (all weights without a memfd load)",
    descriptor: BufferDescriptor::blob(),
};

/// The iGPU's per-step scratch: f32 hidden states, int8 activations, partial sums.
pub const IGPU_WORK: SharedBufferKind = SharedBufferKind {
    name: "onebit-work",
    surface: "igpu",
    holds: "per-step scratch: f32 hidden states, int8 activations, attention partials",
    descriptor: BufferDescriptor::blob(),
};

/// One session on the iGPU: its KV cache and logits (f32), with its token ids.
pub const IGPU_SEQUENCE: SharedBufferKind = SharedBufferKind {
    name: "onebit-seq",
    surface: "igpu",
    holds: "one session: f32 KV cache and logits, u32 token ids",
    descriptor: BufferDescriptor::f32(),
};

/// The NPU's projection weights, grouped into buffers of at most one udmabuf chunk.
pub const NPU_WEIGHTS: SharedBufferKind = SharedBufferKind {
    name: "npu-weights",
    surface: "npu",
    holds: "packed ternary projection weights",
    descriptor: BufferDescriptor::ternary(),
};

/// The NPU's int8 activations.
pub const NPU_ACTIVATIONS: SharedBufferKind = SharedBufferKind {
    name: "npu-act",
    surface: "npu",
    holds: "int8 activations of a prefill chunk",
    descriptor: BufferDescriptor::int8(),
};

/// The NPU's scales.
pub const NPU_SCALES: SharedBufferKind = SharedBufferKind {
    name: "npu-scales",
    surface: "npu",
    holds: "f32 weight and per-token activation scales",
    descriptor: BufferDescriptor::f32(),
};

/// The NPU's outputs.
pub const NPU_OUTPUT: SharedBufferKind = SharedBufferKind {
    name: "npu-out",
    surface: "npu",
    holds: "f32 projection outputs",
    descriptor: BufferDescriptor::f32(),
};

/// Every kind, in the order `onebit probe` lists them.
pub const ALL: [SharedBufferKind; 8] = [
    MODEL_FILE,
    IGPU_WEIGHTS,
    IGPU_WORK,
    IGPU_SEQUENCE,
    NPU_WEIGHTS,
    NPU_ACTIVATIONS,
    NPU_SCALES,
    NPU_OUTPUT,
];

#[cfg(test)]
mod tests {
    use super::*;
    use onebit_drv::buffer::{check_import, DrmModifier};

    #[test]
    fn every_kind_is_linear_and_importable() {
        for k in ALL {
            assert_eq!(k.descriptor.modifier, DrmModifier::Linear, "{}", k.name);
            check_import("test", k.name, &k.descriptor).unwrap();
        }
    }
}
