"""Operations: notifications (`fleetstream notify`) and the ops bot (`fleetstream bot`)."""
