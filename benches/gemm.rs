//! Criterion bench of the packed product alone, one thread, at the shapes of ResNet-50's
//! layers at 224 × 224: each f32 kernel this CPU runs (AVX2, AVX-512) and bfloat16, side by
//! side in one run, so their ratio is measured on the same machine at the same moment. No
//! weights needed (the operands are noise).

use camview::model::kernels::packed_gemm::{
    Bf16Kernel, Epilogue, F32Kernel, Format, PackedMatrix, bf16_kernel_available,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// (name, rows, depth, width): output pixels × (k·k·C_in) × C_out of one image.
const SHAPES: [(&str, usize, usize, usize); 9] = [
    ("stem 7x7", 12544, 147, 64),
    ("layer1 1x1 reduce", 3136, 256, 64),
    ("layer1 1x1 expand", 3136, 64, 256),
    ("layer1 winograd 4x4", 196, 64, 64),
    ("layer2 1x1 expand", 784, 128, 512),
    ("layer3 1x1 reduce", 196, 1024, 256),
    ("layer3 winograd 4x4", 16, 256, 256),
    ("layer4 1x1 expand", 49, 512, 2048),
    ("layer4 winograd 2x2", 16, 512, 512),
];

fn noise(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 2_654_435_761 + seed) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

fn gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    g.sample_size(20);
    for (name, rows, depth, width) in SHAPES {
        let lhs = noise(rows * depth, 1);
        let weights = noise(depth * width, 2);
        let bias = noise(width, 3);
        let residual = noise(rows * width, 4);
        let at = |k: usize, col: usize| weights[k * width + col];
        let mut matrices: Vec<(&str, PackedMatrix)> = Vec::new();
        for kernel in [F32Kernel::Avx2, F32Kernel::Avx512] {
            if let Some(m) = PackedMatrix::from_fn_with_kernel(kernel, depth, width, at) {
                matrices.push((kernel.name(), m));
            }
        }
        if bf16_kernel_available()
            && let Some(m) =
                PackedMatrix::from_fn_in(Format::Bf16(Bf16Kernel::Native), depth, width, at)
        {
            matrices.push(("bf16", m));
        }
        g.throughput(Throughput::Elements((rows * depth * width) as u64));
        let mut dst = vec![0f32; rows * width];
        for (kernel, matrix) in &matrices {
            g.bench_function(format!("{name} {rows}x{depth}x{width} {kernel}"), |b| {
                b.iter(|| {
                    let epilogue = Epilogue {
                        bias: &bias,
                        residual: Some(&residual),
                        relu: true,
                    };
                    matrix.multiply(&lhs, depth, &mut dst, epilogue, 1);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, gemm);
criterion_main!(benches);
