//! Noise schedulers, from `scheduler/scheduler_config.json`: DDIM (deterministic), Euler and
//! Euler ancestral (what the Turbo models use, with trailing timestep spacing).
//!
//! The noise an ancestral step adds is handed in by the caller, drawn from each image's own
//! seeded generator: an image is the same whether it was generated alone or in a batch, and
//! the same seed gives the same image. Scheduler classes without an implementation here
//! (PNDM, LMS, DPM-Solver...) run as DDIM over the same noise schedule, which diffusers' own
//! documentation lists as interchangeable for these models; `/v1/models` and the start-up
//! log say when that happens.

use std::path::Path;

use candle_core::Tensor;
use serde::Deserialize;

use super::config::read_json;
use crate::{Error, Result};

/// How a step moves from one noise level to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// DDIM with eta 0: no noise added.
    Ddim,
    /// Euler's method on the sigma schedule: no noise added.
    Euler,
    /// Euler ancestral: a step lands below the next noise level and adds fresh noise.
    EulerAncestral,
}

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The noise.
    Epsilon,
    /// The velocity (SD 2.x at 768 pixels).
    Velocity,
    /// The clean sample.
    Sample,
}

/// Where the inference timesteps sit in the training schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    /// Multiples of training steps / steps, from 0 up (plus `steps_offset`).
    Leading,
    /// Counted down from the last training step (few-step models).
    Trailing,
    /// Evenly from 0 to the last training step.
    Linspace,
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(rename = "_class_name")]
    class_name: String,
    #[serde(default = "thousand")]
    num_train_timesteps: usize,
    #[serde(default = "beta_start")]
    beta_start: f64,
    #[serde(default = "beta_end")]
    beta_end: f64,
    #[serde(default = "linear")]
    beta_schedule: String,
    #[serde(default = "epsilon")]
    prediction_type: String,
    #[serde(default)]
    timestep_spacing: Option<String>,
    #[serde(default)]
    steps_offset: usize,
    #[serde(default)]
    set_alpha_to_one: Option<bool>,
}

fn thousand() -> usize {
    1000
}
fn beta_start() -> f64 {
    0.0001
}
fn beta_end() -> f64 {
    0.02
}
fn linear() -> String {
    "linear".into()
}
fn epsilon() -> String {
    "epsilon".into()
}

/// A pipeline's scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The step method.
    pub method: Method,
    /// The class `scheduler_config.json` names, when it runs as another method.
    pub substituted: Option<String>,
    /// What the UNet predicts.
    pub prediction: Prediction,
    /// Where inference timesteps sit.
    pub spacing: Spacing,
    steps_offset: usize,
    /// Product of (1 - beta) up to each training step.
    alphas_cumprod: Vec<f64>,
    /// DDIM's alpha product after the last step.
    final_alpha_cumprod: f64,
}

impl SchedulerConfig {
    /// Reads `dir/scheduler/scheduler_config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let file: File = read_json(dir, "scheduler/scheduler_config.json")?;
        let name = dir.join("scheduler/scheduler_config.json");
        let refuse = |field: &str, why: String| {
            Error::Unsupported(format!("{}: {field}: {why}", name.display()))
        };
        let (method, substituted) = match file.class_name.as_str() {
            "DDIMScheduler" => (Method::Ddim, None),
            "EulerDiscreteScheduler" => (Method::Euler, None),
            "EulerAncestralDiscreteScheduler" => (Method::EulerAncestral, None),
            other => (Method::Ddim, Some(other.to_owned())),
        };
        let prediction = match file.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::Velocity,
            "sample" => Prediction::Sample,
            other => return Err(refuse("prediction_type", format!("{other:?} is not supported"))),
        };
        let default_spacing = if method == Method::Ddim { "leading" } else { "linspace" };
        let spacing = match file.timestep_spacing.as_deref().unwrap_or(default_spacing) {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            other => return Err(refuse("timestep_spacing", format!("{other:?} is not supported"))),
        };
        let t = file.num_train_timesteps;
        if t < 2 {
            return Err(refuse("num_train_timesteps", format!("{t}: at least 2")));
        }
        let betas: Vec<f64> = match file.beta_schedule.as_str() {
            "linear" => (0..t)
                .map(|i| {
                    file.beta_start + (file.beta_end - file.beta_start) * i as f64 / (t - 1) as f64
                })
                .collect(),
            "scaled_linear" => {
                let (a, b) = (file.beta_start.sqrt(), file.beta_end.sqrt());
                (0..t).map(|i| (a + (b - a) * i as f64 / (t - 1) as f64).powi(2)).collect()
            }
            "squaredcos_cap_v2" => {
                let bar =
                    |x: f64| ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..t)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / t as f64, (i + 1) as f64 / t as f64);
                        (1.0 - bar(t2) / bar(t1)).min(0.999)
                    })
                    .collect()
            }
            other => return Err(refuse("beta_schedule", format!("{other:?} is not supported"))),
        };
        let mut alphas_cumprod = Vec::with_capacity(t);
        let mut product = 1.0;
        for beta in betas {
            product *= 1.0 - beta;
            alphas_cumprod.push(product);
        }
        let final_alpha_cumprod =
            if file.set_alpha_to_one.unwrap_or(true) { 1.0 } else { alphas_cumprod[0] };
        Ok(Self {
            method,
            substituted,
            prediction,
            spacing,
            steps_offset: file.steps_offset,
            alphas_cumprod,
            final_alpha_cumprod,
        })
    }

    /// Whether this is a few-step schedule (trailing spacing, as the Turbo models use):
    /// their default guidance is off.
    pub fn few_step(&self) -> bool {
        self.spacing == Spacing::Trailing
    }

    /// The schedule for `steps` inference steps.
    pub fn schedule(&self, steps: usize) -> Result<Schedule> {
        let t = self.alphas_cumprod.len();
        if steps == 0 || steps > t {
            return Err(Error::Unsupported(format!("steps {steps}: between 1 and {t}")));
        }
        let timesteps: Vec<f64> = match self.spacing {
            Spacing::Leading => {
                let ratio = t / steps;
                (0..steps)
                    .rev()
                    .map(|k| (k * ratio + self.steps_offset).min(t - 1) as f64)
                    .collect()
            }
            Spacing::Trailing => {
                let ratio = t as f64 / steps as f64;
                (0..steps).map(|k| ((t as f64 - k as f64 * ratio).round() - 1.0).max(0.0)).collect()
            }
            Spacing::Linspace if steps == 1 => vec![(t - 1) as f64],
            Spacing::Linspace => {
                (0..steps).rev().map(|k| (t - 1) as f64 * k as f64 / (steps - 1) as f64).collect()
            }
        };
        let sigma_at = |x: f64| {
            let sigma = |j: usize| ((1.0 - self.alphas_cumprod[j]) / self.alphas_cumprod[j]).sqrt();
            let lo = x.floor() as usize;
            let hi = (lo + 1).min(t - 1);
            let w = x - lo as f64;
            sigma(lo) * (1.0 - w) + sigma(hi) * w
        };
        let (ddim, sigmas) = match self.method {
            Method::Ddim => {
                let alpha = |x: f64| self.alphas_cumprod[x.round() as usize];
                let ddim = (0..steps)
                    .map(|i| {
                        let prev =
                            timesteps.get(i + 1).map_or(self.final_alpha_cumprod, |&p| alpha(p));
                        (alpha(timesteps[i]), prev)
                    })
                    .collect();
                (ddim, Vec::new())
            }
            Method::Euler | Method::EulerAncestral => {
                let mut sigmas: Vec<f64> = timesteps.iter().map(|&x| sigma_at(x)).collect();
                sigmas.push(0.0);
                (Vec::new(), sigmas)
            }
        };
        let init_noise_sigma = match (self.method, self.spacing) {
            (Method::Ddim, _) => 1.0,
            (_, Spacing::Leading) => (sigmas[0].powi(2) + 1.0).sqrt(),
            _ => sigmas[0],
        };
        let timesteps = match self.method {
            Method::Ddim => timesteps.iter().map(|x| x.round()).collect(),
            _ => timesteps,
        };
        Ok(Schedule {
            method: self.method,
            prediction: self.prediction,
            timesteps,
            ddim,
            sigmas,
            init_noise_sigma,
        })
    }
}

/// The steps of one generation.
#[derive(Debug, Clone)]
pub struct Schedule {
    method: Method,
    prediction: Prediction,
    timesteps: Vec<f64>,
    /// DDIM: alpha product at each step's timestep and at the next one.
    ddim: Vec<(f64, f64)>,
    /// Euler: the noise level at each step, and 0 after the last.
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
}

impl Schedule {
    /// How many steps.
    pub fn len(&self) -> usize {
        self.timesteps.len()
    }

    /// Never: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.timesteps.is_empty()
    }

    /// The timestep the UNet is given at step `i`.
    pub fn timestep(&self, i: usize) -> f64 {
        self.timesteps[i]
    }

    /// What the initial Gaussian noise is multiplied by.
    pub fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    /// Whether [`Self::step`] needs fresh noise.
    pub fn needs_noise(&self) -> bool {
        self.method == Method::EulerAncestral
    }

    /// The UNet's input at step `i`.
    pub fn scale_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        match self.method {
            Method::Ddim => Ok(sample.clone()),
            Method::Euler | Method::EulerAncestral => {
                let sigma = self.sigmas[i];
                Ok((sample / (sigma * sigma + 1.0).sqrt())?)
            }
        }
    }

    /// The sample after step `i`, from the UNet's output; `noise` (standard normal, the
    /// sample's shape) is needed when [`Self::needs_noise`].
    pub fn step(
        &self,
        i: usize,
        output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        match self.method {
            Method::Ddim => {
                let (alpha, alpha_prev) = self.ddim[i];
                let (a, b) = (alpha.sqrt(), (1.0 - alpha).sqrt());
                let (original, epsilon) = match self.prediction {
                    Prediction::Epsilon => (((sample - (output * b)?)? / a)?, output.clone()),
                    Prediction::Velocity => {
                        (((sample * a)? - (output * b)?)?, ((output * a)? + (sample * b)?)?)
                    }
                    Prediction::Sample => (output.clone(), ((sample - (output * a)?)? / b)?),
                };
                let next =
                    ((original * alpha_prev.sqrt())? + (epsilon * (1.0 - alpha_prev).sqrt())?)?;
                Ok(next)
            }
            Method::Euler | Method::EulerAncestral => {
                let (sigma, sigma_next) = (self.sigmas[i], self.sigmas[i + 1]);
                let original = match self.prediction {
                    Prediction::Epsilon => (sample - (output * sigma)?)?,
                    Prediction::Velocity => {
                        let s2 = sigma * sigma + 1.0;
                        ((output * (-sigma / s2.sqrt()))? + (sample / s2)?)?
                    }
                    Prediction::Sample => output.clone(),
                };
                let derivative = ((sample - original)? / sigma)?;
                if self.method == Method::Euler {
                    return Ok((sample + (derivative * (sigma_next - sigma))?)?);
                }
                let up = (sigma_next.powi(2) * (sigma.powi(2) - sigma_next.powi(2))
                    / sigma.powi(2))
                .max(0.0)
                .sqrt();
                let down = (sigma_next.powi(2) - up * up).max(0.0).sqrt();
                let moved = (sample + (derivative * (down - sigma))?)?;
                let noise = noise
                    .ok_or_else(|| Error::Unsupported("an ancestral step needs noise".into()))?;
                Ok((moved + (noise * up)?)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, json: &str) -> SchedulerConfig {
        std::fs::create_dir_all(dir.join("scheduler")).unwrap();
        std::fs::write(dir.join("scheduler/scheduler_config.json"), json).unwrap();
        SchedulerConfig::read(dir).unwrap()
    }

    #[test]
    fn timesteps_follow_each_spacing() {
        let dir = tempfile::tempdir().unwrap();
        let ddim = config(
            dir.path(),
            r#"{"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1,
                "set_alpha_to_one": false}"#,
        );
        let s = ddim.schedule(4).unwrap();
        assert_eq!(s.timesteps, vec![751.0, 501.0, 251.0, 1.0]);
        // The last step lands on the first training step's alpha (set_alpha_to_one false).
        assert_eq!(s.ddim[3].1, ddim.alphas_cumprod[0]);
        let turbo = config(
            dir.path(),
            r#"{"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "trailing",
                "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}"#,
        );
        assert!(turbo.few_step());
        let s = turbo.schedule(4).unwrap();
        assert_eq!(s.timesteps, vec![999.0, 749.0, 499.0, 249.0]);
        assert!(s.needs_noise());
        assert_eq!(s.sigmas.len(), 5);
        assert_eq!(s.sigmas[4], 0.0);
        assert!(s.sigmas.windows(2).all(|w| w[0] > w[1]), "{:?}", s.sigmas);
        assert_eq!(s.init_noise_sigma(), s.sigmas[0]);
        let pndm = config(dir.path(), r#"{"_class_name": "PNDMScheduler"}"#);
        assert_eq!(pndm.method, Method::Ddim);
        assert_eq!(pndm.substituted.as_deref(), Some("PNDMScheduler"));
    }

    #[test]
    fn a_ddim_step_from_the_true_noise_recovers_the_clean_sample() {
        let dir = tempfile::tempdir().unwrap();
        let ddim =
            config(dir.path(), r#"{"_class_name": "DDIMScheduler", "set_alpha_to_one": true}"#);
        let s = ddim.schedule(1).unwrap();
        let dev = candle_core::Device::Cpu;
        let clean = Tensor::new(&[0.5f32, -0.25], &dev).unwrap();
        let noise = Tensor::new(&[1.0f32, -2.0], &dev).unwrap();
        let (alpha, _) = s.ddim[0];
        let noisy =
            ((&clean * alpha.sqrt()).unwrap() + (&noise * (1.0 - alpha).sqrt()).unwrap()).unwrap();
        let out = s.step(0, &noise, &noisy, None).unwrap().to_vec1::<f32>().unwrap();
        assert!((out[0] - 0.5).abs() < 1e-4 && (out[1] + 0.25).abs() < 1e-4, "{out:?}");
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("scheduler")).unwrap();
        std::fs::write(
            dir.path().join("scheduler/scheduler_config.json"),
            r#"{"_class_name": "DDIMScheduler", "beta_schedule": "sigmoid"}"#,
        )
        .unwrap();
        let e = SchedulerConfig::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("beta_schedule") && e.contains("sigmoid"), "{e}");
    }
}
