//! PyTorch's fused AdamW kernel (`torch.optim.AdamW(fused=True)`), CPU and CUDA.

use crate::{ffi, Error};
use tch::Tensor;

/// The tensors of one fused AdamW update (one parameter group): parameter `i` with its
/// gradient and moments; all on one device, floating point.
#[derive(Debug)]
pub struct AdamWTensors<'a> {
    pub params: &'a [Tensor],
    pub grads: &'a [Tensor],
    pub exp_avgs: &'a [Tensor],
    pub exp_avg_sqs: &'a [Tensor],
}

/// One AdamW step on every tensor of `t` in place, as `torch.optim.AdamW(fused=True)`:
/// decoupled weight decay, bias-corrected moments, one pass over each tensor. `step` is
/// the step count after this step (1 for the first).
pub fn fused_adamw(
    t: &AdamWTensors<'_>,
    step: u64,
    lr: f64,
    (beta1, beta2): (f64, f64),
    weight_decay: f64,
    eps: f64,
) -> Result<(), Error> {
    let n = t.params.len();
    if [t.grads.len(), t.exp_avgs.len(), t.exp_avg_sqs.len()].iter().any(|&k| k != n) {
        return Err(Error::Torch(format!(
            "fused AdamW: {n} parameters but {} gradients, {} and {} moments",
            t.grads.len(),
            t.exp_avgs.len(),
            t.exp_avg_sqs.len()
        )));
    }
    if n == 0 {
        return Ok(());
    }
    // The kernel reads the step from a float tensor on the parameters' device.
    let step = Tensor::from(step as f32).to_device(t.params[0].device());
    let ptrs = |v: &[Tensor]| v.iter().map(|x| x.as_ptr()).collect::<Vec<_>>();
    let (p, g, m, v) = (ptrs(t.params), ptrs(t.grads), ptrs(t.exp_avgs), ptrs(t.exp_avg_sqs));
    // SAFETY: four arrays of n valid tensor pointers and one step tensor, all alive for
    // the call; the C++ side only copies the tensor handles.
    ffi::check(unsafe {
        ffi::torchext_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            step.as_ptr(),
            n,
            lr,
            beta1,
            beta2,
            weight_decay,
            eps,
        )
    })
}
