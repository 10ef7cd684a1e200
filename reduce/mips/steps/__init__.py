"""The MIPS level-1 (BCD) steps (seed: Handbook ch. 6, Figs. 5.1 and 5.6), lazy over chunks of
DCEs: each builds dask graphs only. Each step module ``reduce.mips.steps.<step>`` holds the
xarray/dask wrapper; its plain-array kernels (task bodies included) are in
``reduce.mips.kernels.<step>``:

    si            24 um: replace_saturated (slope, difference, replaced images), correct_jailbar,
                  correct_droop, flag_cosmic_rays; ``si.pipeline`` runs every 24 um step in order
    ramps         70/160 um: fit_ramps (nonlinearity, saturation, cosmic-ray jumps, slopes);
                  ``ramps.pipeline`` runs every Ge step in order
    dark          subtract_dark (all arrays)
    responsivity  70/160 um: track_responsivity (stim flashes), apply_responsivity
    uncertainty   24 um: uncertainty (the Ge one comes out of fit_ramps)
    flat          flat_field (all arrays)
    fluxcal       to_surface_brightness: x FLUXCONV -> MJy/sr (all arrays)
    mask          make_mask (all arrays)

A step is ``step(ds, cal, params) -> ds`` with ``ds`` the plan's raw group
(``reduce.mips.pipeline.plan_bcd``) and ``cal`` its ``reduce.mips.calib.CalTable``.
"""
from .dark import subtract_dark
from .flat import flat_field
from .fluxcal import to_surface_brightness
from .mask import make_mask
from .ramps import fit_ramps
from .responsivity import apply_responsivity, track_responsivity
from .si import correct_droop, correct_jailbar, flag_cosmic_rays, replace_saturated
from .uncertainty import uncertainty

__all__ = ["replace_saturated", "fit_ramps", "subtract_dark", "correct_jailbar", "correct_droop",
           "track_responsivity", "apply_responsivity", "uncertainty", "flat_field", "flag_cosmic_rays",
           "to_surface_brightness", "make_mask"]
