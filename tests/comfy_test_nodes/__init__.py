"""Test-only ComfyUI nodes: deterministic stand-ins for the multi-gigabyte text encoders, CLIP
vision model, audio encoder and video VAEs, so example workflows run end to end on the CPU in tests.

stas_harness/server.py links this folder into the test server's custom_nodes (never shipped with
the pack, never loaded by a user's ComfyUI). The diffusion models themselves are NOT faked: the
tests load tiny random-weight files of the real architectures through ComfyUI's UNETLoader.
Each stand-in returns duck-typed objects with exactly the methods ComfyUI's own nodes call.
"""
import math
import zlib

import torch

# text encoder kind -> (tokens, context dim, pooled dim or None)
TEXT = {"wan": (16, 4096, None), "hunyuan_video": (16, 4096, 768), "ltxav": (16, 128, None)}
# VAE kind -> (latent channels, spatial compression, temporal compression)
VAES = {"wan2.1": (16, 8, 4), "wan2.2": (48, 16, 4), "hunyuan_video": (16, 8, 4), "ltx2": (128, 32, 8)}


def _gen(text: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(text.encode()))


class FakeCLIP:
    def __init__(self, kind: str):
        self.kind = kind

    def tokenize(self, text, **kwargs):
        return {"text": text}

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        n, dim, pooled_dim = TEXT[self.kind]
        g = _gen(tokens["text"])
        cond = torch.randn(1, n, dim, generator=g)
        pooled = torch.randn(1, pooled_dim, generator=g) if pooled_dim else None
        if return_dict:
            out = {"cond": cond, "pooled_output": pooled}
            if self.kind == "ltxav":  # the tiny LTX-2 stand-in's width (video 64 + audio 64); integer mask
                out["attention_mask"] = torch.ones(1, n, dtype=torch.long)
            return out
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens, **kwargs):
        out = self.encode_from_tokens(tokens, return_dict=True)
        cond = out.pop("cond")
        return [[cond, {k: v for k, v in out.items() if v is not None}]]


class FakeVAE:
    """Pixels <-> latent by pooling / nearest upsampling: shapes of the real video VAE, no weights."""

    def __init__(self, kind: str):
        self.channels, self.spatial, self.temporal = VAES[kind]
        self.latent_channels = self.channels
        self.latent_dim = 3

    def spacial_compression_decode(self):
        return self.spatial

    def spacial_compression_encode(self):
        return self.spatial

    def temporal_compression_decode(self):
        return self.temporal

    def decode(self, z, **kwargs):
        b, c, t, h, w = z.shape
        rgb = torch.sigmoid(z[:, :3].float())
        frames = 1 + self.temporal * (t - 1)
        idx = torch.clamp((torch.arange(frames) + self.temporal - 1) // self.temporal, max=t - 1)
        rgb = rgb[:, :, idx].repeat_interleave(self.spatial, 3).repeat_interleave(self.spatial, 4)
        return rgb.permute(0, 2, 3, 4, 1).contiguous()  # [B, T, H, W, 3]

    def decode_tiled(self, samples, **kwargs):
        return self.decode(samples)

    def encode(self, pixels, **kwargs):
        px = pixels[..., :3].float()  # [N, H, W, 3]
        n, h, w, _ = px.shape
        t = 1 + (n - 1) // self.temporal
        pooled = torch.nn.functional.avg_pool2d(px.movedim(-1, 1), self.spatial)  # [N, 3, h, w]
        z = torch.zeros(1, self.channels, t, h // self.spatial, w // self.spatial)
        z[0, :3] = pooled[:: self.temporal][:t].movedim(0, 1) * 2 - 1
        return z

    def encode_tiled(self, pixels, **kwargs):
        return self.encode(pixels)


class FakeAudioVAE:
    """LTX-2's audio VAE by its numbers (8 x 16 latent, 25 latents/s, 24 kHz stereo out), no weights."""

    latent_channels, latent_frequency_bins, sample_rate, output_sample_rate = 8, 16, 16000, 24000

    def __init__(self):
        import comfy_extras.nodes_lt_audio as lta
        self.first_stage_model = self  # ComfyUI after 0.8.0 wraps it in comfy.sd.VAE
        self.channels_last = not hasattr(lta, "AudioVAE")  # ... whose decode gives [B, samples, channels]

    def num_of_latents_from_frames(self, frames_number, frame_rate):
        return math.ceil(frames_number / frame_rate * 25)

    def decode(self, z, **kwargs):
        n = z.shape[2] * self.output_sample_rate // 25
        t = torch.arange(n) / self.output_sample_rate
        wave = (0.1 * torch.sin(2 * math.pi * 440 * t)).expand(z.shape[0], 2, n).clone()
        return wave.movedim(1, -1) if self.channels_last else wave


class FakeCLIPVision:
    def encode_image(self, image, crop=True):
        from comfy.clip_vision import Output
        g = torch.Generator().manual_seed(int(image.float().mean().item() * 1e6) % (2 ** 31))
        out = Output()
        out.last_hidden_state = torch.randn(1, 257, 1280, generator=g)
        out.penultimate_hidden_states = torch.randn(1, 257, 1280, generator=g)
        out.image_embeds = torch.randn(1, 1024, generator=g)
        out.mm_projected = None
        return out


class FakeAudioEncoder:
    """wav2vec2 large by its numbers (16 kHz in, 50 hidden states/s of width 1024, the input projection and
    24 layers: 25 in all), no weights: what ComfyUI's AudioEncoderEncode gets from ``encode_audio``."""

    sample_rate, stride, window, width, layers = 16000, 320, 400, 1024, 25

    def encode_audio(self, audio, sample_rate):
        n = audio.shape[-1] * self.sample_rate // sample_rate   # samples after resampling to 16 kHz
        t = max(1, (n - self.window) // self.stride + 1)         # wav2vec2's conv feature extractor
        g = torch.Generator().manual_seed(zlib.crc32(audio.float().mean().item().hex().encode()))
        layers = tuple(torch.randn(audio.shape[0], t, self.width, generator=g) for _ in range(self.layers))
        return {"encoded_audio": layers[-1], "encoded_audio_all_layers": layers, "audio_samples": n}


class STASTestTextEncoder:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (list(TEXT),)}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "_stas_test"

    def load(self, kind):
        return (FakeCLIP(kind),)


class STASTestVAE:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (list(VAES),)}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "_stas_test"

    def load(self, kind):
        return (FakeVAE(kind),)


class STASTestCheckpoint:
    """A single-file checkpoint (LTX-2: model + VAE + audio VAE): its diffusion model loaded by ComfyUI's
    own checkpoint loader from the stand-in file; its video VAE a stand-in."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": ("STRING", {}), "vae_kind": (list(VAES),)}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "_stas_test"

    def load(self, ckpt_name, vae_kind):
        import comfy.sd
        import folder_paths
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        model = comfy.sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=False)[0]
        return (model, None, FakeVAE(vae_kind))


class STASTestAudioVAE:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "_stas_test"

    def load(self):
        return (FakeAudioVAE(),)


class STASTestCLIPVision:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load"
    CATEGORY = "_stas_test"

    def load(self):
        return (FakeCLIPVision(),)


class STASTestAudioEncoder:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("AUDIO_ENCODER",)
    FUNCTION = "load"
    CATEGORY = "_stas_test"

    def load(self):
        return (FakeAudioEncoder(),)


NODE_CLASS_MAPPINGS = {
    "STASTestTextEncoder": STASTestTextEncoder,
    "STASTestVAE": STASTestVAE,
    "STASTestCLIPVision": STASTestCLIPVision,
    "STASTestCheckpoint": STASTestCheckpoint,
    "STASTestAudioVAE": STASTestAudioVAE,
    "STASTestAudioEncoder": STASTestAudioEncoder,
}
