"""Report media: every photo a citizen sends, fetched once and kept in an S3-compatible object store.

``check``    magic-byte sniffing, type and size limits, decoding, the EXIF-free public copy (pure)
``store``    the object store (S3 API: SeaweedFS locally, any S3 endpoint in production)
``fetch``    the per-channel media fetcher contract (entry-point group ``crm_pipeline.media``)
``fetchers`` the built-in fetchers (plain HTTP, Meta Graph API, e-mail parts from the raw record)
``stage``    the media stage: its own process, off the report's path (``crm-pipeline media run``)
``web``      serving: officers' signed URLs, Open311's public copy, officers' "after" photos
"""
