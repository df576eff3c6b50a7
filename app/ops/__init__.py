"""Operations: what ops and monitoring read of a running gateway (`/metrics`)."""
