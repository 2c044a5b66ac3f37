//! The kernels' PTX assembles with NVIDIA's `ptxas` for the GPUs rfx
//! targets (Volta, Ampere, Hopper). `ptxas` comes from the
//! `nvidia-cuda-nvcc-cu12` wheel (scripts/test.sh installs it into the test
//! venv); `RFX_PTXAS` names it, else it is looked up on `PATH`.
//! Skip with `RFX_TEST_SKIP_PTXAS=1` where it cannot be had.

use std::path::PathBuf;
use std::process::Command;

fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RFX_PTXAS") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ptxas"))
        .find(|p| p.is_file())
}

#[test]
fn the_kernels_assemble_for_volta_ampere_and_hopper() {
    if std::env::var_os("RFX_TEST_SKIP_PTXAS").is_some() {
        eprintln!("skipped: RFX_TEST_SKIP_PTXAS is set");
        return;
    }
    let ptxas = ptxas().expect(
        "no ptxas: set RFX_PTXAS (pip install nvidia-cuda-nvcc-cu12 has one) or RFX_TEST_SKIP_PTXAS=1",
    );
    let dir = std::env::temp_dir().join(format!("rfx-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("kernels.ptx");
    std::fs::write(&src, rfx_device::kernels::ptx()).unwrap();
    for arch in ["sm_70", "sm_80", "sm_90"] {
        let out = Command::new(&ptxas)
            .args(["--gpu-name", arch, "--warn-on-spills", "-o"])
            .arg(dir.join(format!("{arch}.cubin")))
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.display()));
        assert!(
            out.status.success(),
            "ptxas {arch} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cubin = std::fs::read(dir.join(format!("{arch}.cubin"))).unwrap();
        // An ELF holding every kernel.
        assert_eq!(&cubin[..4], b"\x7fELF");
        let text = String::from_utf8_lossy(&cubin);
        assert!(text.contains("rfx_reduce_sum_f32") && text.contains("rfx_saxpy_f32"));
    }
    std::fs::remove_dir_all(&dir).ok();
}
