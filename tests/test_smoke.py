def test_create_and_upload(client, tmp_path):
    client.create_model("text2img", task_type="ImageGeneration", provider="Internal")
    client.create_version("text2img", "1.0")
    f = tmp_path / "model.onnx"
    f.write_bytes(b"x" * 3_000_000)
    v = client.upload_artifact("text2img", "1.0", f)
    assert v.size_bytes == 3_000_000
    sha, size = client.download_artifact("text2img", "1.0", tmp_path / "out.onnx")
    assert sha == v.sha256
