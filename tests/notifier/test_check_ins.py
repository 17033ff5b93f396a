async def test_an_sms_check_in_stopped_at_send_time_is_asked_again_by_email(
    world: World, notifier: Notifier, smtp: SmtpSink
) -> None:
    """The safety net when nothing re-planned: care SMS consent withdrawn by a path that does
    not move the messages; the notifier suppresses the text when it is due, and the follow-up
    sweep asks again by email the same minute."""
    appointment_id = await complete_session(world, london(date(2027, 3, 26), 10))
    first = (await planned(world, appointment_id))[0]
    await factories.consent(
        world.pool, world.patient_id, {"care_sms": False}, now=world.clock.now()
    )

    await move_to(world, notifier, first.due_at)
    sms_row = (await rows(world, appointment_id))[0]
    await world.settled(sms_row["id"], "suppressed")
    await follow_up(world.pool, world.clock)

    email = [r for r in await rows(world, appointment_id) if r["channel"] == "email"]
    assert len(email) == 1 and email[0]["context"]["check_in_id"] == first.id
    await world.settled(email[0]["id"], "sent", "delivered")
    assert any("How is your scalp?" in m.body for m in smtp.recorder.items("email"))
    current = await check_ins.get(world.pool, first.id)
    assert current is not None and current.channel == "email"
