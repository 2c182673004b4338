"""Iterative solvers on the damped Gauss-Newton Hessian, as references for (and refinements of) EK-FAC.

- layout: the tracked layers' W̄ matrices as one flat vector, and back.
- ggn: Gauss-Newton-vector products G v through the logits (torch.func jvp + vjp).
- iterative: conjugate gradient (optionally preconditioned) and LiSSA on (G + λI) x = b.
- preconditioned: EK-FAC's (G + λI)⁻¹ as a flat operator and the per-layer damping λ.
- refine: `--refine cg`, query gradients solved by EK-FAC-preconditioned CG.
- damping: `--damping auto`, λ chosen by agreement with the iterative solver.
- trust: `wherefrom check`, EK-FAC against the iterative solver per layer, with a verdict.
- pbrf: the proximal Bregman response function (Bae et al. 2022), solved by optimisation.
"""
